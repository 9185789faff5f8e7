"""The byte ledger: what crossed between server and clients, per round, client and direction, measured."""

from fedcompress.ledger.ledger import Ledger, Transfer
from fedcompress.ledger.recorder import RunRecorder

__all__ = ["Ledger", "Transfer", "RunRecorder"]
