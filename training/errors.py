class TrainingError(Exception):
    """Bad input to the trainer (file, settings, checkpoint, prime text): shown as one line."""
