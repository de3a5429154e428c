import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShareEvent(_message.Message):
    __slots__ = ("sharer_id", "recipient_id", "product_id")
    SHARER_ID_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    sharer_id: str
    recipient_id: str
    product_id: str
    def __init__(self, sharer_id: _Optional[str] = ..., recipient_id: _Optional[str] = ..., product_id: _Optional[str] = ...) -> None: ...

class PurchaseEvent(_message.Message):
    __slots__ = ("user_id", "product_id", "share_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SHARE_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    product_id: str
    share_id: str
    def __init__(self, user_id: _Optional[str] = ..., product_id: _Optional[str] = ..., share_id: _Optional[str] = ...) -> None: ...

class ViewEvent(_message.Message):
    __slots__ = ("user_id", "product_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    product_id: str
    def __init__(self, user_id: _Optional[str] = ..., product_id: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "event_time", "share", "purchase", "view")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    PURCHASE_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_time: _timestamp_pb2.Timestamp
    share: ShareEvent
    purchase: PurchaseEvent
    view: ViewEvent
    def __init__(self, event_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., share: _Optional[_Union[ShareEvent, _Mapping]] = ..., purchase: _Optional[_Union[PurchaseEvent, _Mapping]] = ..., view: _Optional[_Union[ViewEvent, _Mapping]] = ...) -> None: ...

class RecordEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class RecordEventsResponse(_message.Message):
    __slots__ = ("accepted_count", "duplicate_count", "model_version")
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    accepted_count: int
    duplicate_count: int
    model_version: str
    def __init__(self, accepted_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ..., model_version: _Optional[str] = ...) -> None: ...
