"""Qt-free parts of the VoCoSlicer module: MRML <-> vococore conversion, the background runner, parameters, the
model registry, installation and device checks. Imports only ``slicer`` MRML classes, so it runs on slicer-core."""
