"""Errors the algorithm raises across its modules."""


class LearnersTimedOut(TimeoutError):
    """Some learner did not answer a bounded call: it is stuck, and anything sent to it queues."""
