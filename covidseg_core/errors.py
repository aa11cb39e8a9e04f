"""Exceptions a user may see. Each carries a message a radiologist can act on: what is wrong and what to do."""


class CovidSegError(Exception):
    """Base class: `str(err)` is one line for the user; `hint` says what to do about it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip() if self.hint else self.message


class InputError(CovidSegError):
    """A study, image folder, labels file or mask that cannot be used as given."""


class LabelError(InputError):
    """Slice labels that are missing, unknown or too few to train on."""


class ProjectError(CovidSegError):
    """A project folder that cannot be opened or written."""


class RunError(CovidSegError):
    """A run folder that is missing, incompatible or inconsistent."""


class TrainingError(CovidSegError):
    """Training that had to stop (a NaN loss, no usable slices...)."""


class Cancelled(CovidSegError):
    """The user cancelled a long job."""

    def __init__(self, message: str = "Cancelled by the user."):
        super().__init__(message)
