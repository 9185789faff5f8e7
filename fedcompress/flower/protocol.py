"""The fedcompress wire protocol: every key the server and the client mod both use, in one place.

The client side (the mod, the ClientApp) imports from here, never from the server strategy, so a client needs
no server code and the two sides cannot drift apart. Values are part of the protocol: changing one breaks
compatibility with deployed nodes.
"""

from __future__ import annotations

import numpy as np

PROTOCOL_VERSION = 2  # 2: payload, exact tensors and train metrics travel in one frame (frame.py)

# --- train config keys the server sets (ConfigRecord "config" of a train message)
UPLINK = "fedcompress.uplink"  # uplink pipeline spec; "identity" = plain arrays
SEED = "fedcompress.seed"  # the run's seed, mixed into per-(round, node) codec seeds
BASE_ROUND = (
    "fedcompress.base-round"  # round of the model the downlink delta is against (-1: keep what you get)
)
BASE_DIGEST = "fedcompress.base-digest"  # digest of that base model, checked by the client
WIDTH = "fedcompress.width"  # model width of the node's device tier
APPLIED_ROUND = (
    "fedcompress.applied-round"  # last round whose update from this node reached the model (-1: none)
)
RECORD_KEY = "fedcompress.record-key"  # name of the ArrayRecord holding the model, when not "arrays"
SERVER_ROUND = "server-round"  # set by Flower's strategies
DEFAULT_RECORD_KEY = "arrays"

# --- a compressed model (payload.py): one frame (frame.py) in one record under the model's key
FRAME_KEY = "fc"  # the frame's key: a bytes value of a ConfigRecord, or (large frames) an Array
FRAME_STYPE = "fedcompress.frame"  # the Array's stype when the frame is too large for a ConfigRecord
LEGACY_STYPE = "fedcompress.payload/1"  # protocol 1's payload Array: refused with a clear reason
METADATA_METRIC = "fedcompress.metadata-bytes"  # protocol 1's metric; protocol 2 carries it in the frame

# --- client state keys (context.state)
HELD = "fedcompress.held"  # the model this node last received (base of the next downlink delta)
HELD_ROUND = "fedcompress.held-round"
HELD_DIGEST = "fedcompress.held-digest"  # digest of the held model when it is in held_store.py's folder
RESIDUAL = "fedcompress.residual"  # uplink error-feedback memory
DTYPES = "fedcompress.dtypes"  # the model's dtype per tensor, from the last full model received

# --- capability / partition query: message type "query.fedcompress", answered by the mod's query handler
QUERY_ACTION = "fedcompress"
QUERY_MESSAGE_TYPE = f"query.{QUERY_ACTION}"
QUERY = "query"
QUERY_PARTITION = "fedcompress.partition"
PROTOCOL = "fedcompress.protocol"  # answer: the protocol version the node speaks
PARTITION_ID = "partition-id"  # answer (and node_config key): the node's data partition
NUM_PARTITIONS = "num-partitions"  # node_config key set by Flower's simulation engine

# --- codec names
IDENTITY = "identity"
PLAIN_FALLBACK = "fp32-fallback"  # ledger codec of a node without the mod: plain arrays both ways


def mix(*parts: int) -> int:
    """A seed from several integers (numpy's SeedSequence mixes them well); both sides derive codec seeds so."""
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def category(message_type: str) -> str:
    """ "train" for "train" and "train.<action>": Flower's message types are "<category>[.<action>]"."""
    return message_type.split(".", 1)[0]
