"""Training machinery shared by pretraining and fine-tuning: checkpoints, the step loop, distributed setup."""
