"""Errors that name what is wrong with the user's input."""


class EditInputError(ValueError):
    """Bad input to an edit: a missing image, a bad mask, a phrase that cannot be placed, ..."""


class PromptTooLongError(EditInputError):
    """A prompt does not fit the text encoder's 77 tokens."""


class ModelUnavailableError(EditInputError, OSError):
    """A model a run needs cannot be found or loaded; the message names it (every such model, when found by
    ``ale_edit.preflight``) and how to provide it, on one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # a loader's multi-line reason, kept on one line
