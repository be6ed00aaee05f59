"""VoCo Studio: the VoCoSlicer module's three sections (Segment, See what VoCo sees, Train) as a web app on
trame-slicer, for GPU servers without a desktop. A second front end over the same Qt-free presenter
(``VoCoSlicerLib.presenter``) as the Slicer widget."""
