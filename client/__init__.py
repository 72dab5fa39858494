"""The specklab client: book devkits, compile and deploy models, stream events.

>>> from specklab.client import Client
>>> with Client() as lab:                      # SPECKLAB_URL, SPECKLAB_TOKEN
...     print(lab.devices())
"""

from specklab.schemas.booking import BookingPublic, LeasePublic
from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.compile import CompileOptions, CompileReport, LayerReport, Problem
from specklab.schemas.deploy import Deployment
from specklab.schemas.devices import DeviceList, DevicePublic, DeviceType
from specklab.schemas.events import EventKind, dvs_events, spikes
from specklab.schemas.models import ModelInfo
from specklab.schemas.patch import ConfigPatch
from specklab.schemas.recordings import Recording
from specklab.schemas.render import report_table
from specklab.schemas.stream import StreamMode

from ._async_client import AsyncBooking, AsyncClient, AsyncEventStream, AsyncHardwareModel
from ._client import Booking, Client, EventStream, HardwareModel
from ._conversions import (
    DvsEvent,
    Spike,
    as_events,
    raster_to_events,
    to_dvs_events,
    to_raster,
    to_spikes,
)
from ._errors import (
    ApiError,
    AuthenticationError,
    BookingConflict,
    ClientClosed,
    Conflict,
    DeviceBusy,
    DeviceError,
    DeviceOffline,
    InvalidRequest,
    ModelDoesNotFit,
    NotFound,
    PermissionDenied,
    ProtocolError,
    ServerError,
    SpecklabError,
    SpecklabWarning,
    StreamError,
    Timeout,
    TransportError,
    WaitTimeout,
)
from ._remote import RemoteModel
from ._stream import BatchOutput

__all__ = [
    "ApiError",
    "AsyncBooking",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncHardwareModel",
    "AuthenticationError",
    "BatchOutput",
    "Booking",
    "BookingConflict",
    "BookingPublic",
    "ChipConfig",
    "Client",
    "ClientClosed",
    "CompileOptions",
    "CompileReport",
    "ConfigPatch",
    "Conflict",
    "Deployment",
    "DeviceBusy",
    "DeviceError",
    "DeviceList",
    "DeviceOffline",
    "DevicePublic",
    "DeviceType",
    "DvsEvent",
    "EventKind",
    "EventStream",
    "HardwareModel",
    "InvalidRequest",
    "LayerReport",
    "LeasePublic",
    "ModelDoesNotFit",
    "ModelInfo",
    "NotFound",
    "PermissionDenied",
    "Problem",
    "ProtocolError",
    "Recording",
    "RemoteModel",
    "ServerError",
    "SpecklabError",
    "SpecklabWarning",
    "Spike",
    "StreamError",
    "StreamMode",
    "Timeout",
    "TransportError",
    "WaitTimeout",
    "as_events",
    "dvs_events",
    "raster_to_events",
    "report_table",
    "spikes",
    "to_dvs_events",
    "to_raster",
    "to_spikes",
]
