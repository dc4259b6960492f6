"""The one exception type users see for input they can fix."""


class Error(ValueError):
    """Raised for invalid input to cvdeep; the message says what was given and what is accepted.

    It subclasses ValueError so that code written for ``cv2.error``-free NumPy/OpenCV
    pipelines can catch it with ``except ValueError``.
    """
