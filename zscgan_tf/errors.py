"""The one exception type that means "the user's input is wrong", not "we have a bug".

Entry points print a `UserError` as a single line and exit with status 2; any other
exception is a defect and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a flag, a file, a model or a dataset."""
