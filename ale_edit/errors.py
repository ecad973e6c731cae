"""Errors that name what is wrong with the user's input."""


class EditInputError(ValueError):
    """Bad input to an edit: a missing image, a bad mask, a phrase that cannot be placed, ..."""


class PromptTooLongError(EditInputError):
    """A prompt does not fit the text encoder's 77 tokens."""
