"""Making models: datasets, augmentation, model builders, losses, the trainer and frame harvesting."""
