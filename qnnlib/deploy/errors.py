"""The one error type of `qnnlib.deploy`."""


class DeployError(ValueError):
    """The model cannot be deployed, or a saved file is not a valid BinaryMLP."""
