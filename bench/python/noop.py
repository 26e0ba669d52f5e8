"""The noop handler in Python, Cortex's interface: takes the batch, does nothing."""


class Handler:
    def __init__(self, config):
        self.config = config

    def handle_batch(self, payload, batch_id):
        return None
