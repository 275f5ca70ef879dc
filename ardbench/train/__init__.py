"""The one trainer: the training loop, the step, the speed features."""
