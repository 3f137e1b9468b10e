"""The dispatcher: moves jobs from the gateway's queue to their backends and back.

It imports nothing from the service layer: log keeping comes from the runner's task
files, sandbox packing and credentials through the small interfaces of ``hooks.py``.
"""

from jobgate.dispatcher.hooks import CredentialSource, OutputPacker
from jobgate.dispatcher.loop import Dispatcher
from jobgate.dispatcher.settings import DispatchSettings

__all__ = ["CredentialSource", "DispatchSettings", "Dispatcher", "OutputPacker"]
