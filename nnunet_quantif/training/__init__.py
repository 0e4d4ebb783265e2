"""nnUNetTrainer subclasses of the QuantIF method."""
