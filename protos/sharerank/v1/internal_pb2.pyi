from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class FeedPageToken(_message.Message):
    __slots__ = ("offset", "request_hash", "model_version", "served_product_ids", "served_by_sharer")
    class ServedBySharerEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HASH_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVED_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_SHARER_FIELD_NUMBER: _ClassVar[int]
    offset: int
    request_hash: int
    model_version: str
    served_product_ids: _containers.RepeatedScalarFieldContainer[str]
    served_by_sharer: _containers.ScalarMap[str, int]
    def __init__(self, offset: _Optional[int] = ..., request_hash: _Optional[int] = ..., model_version: _Optional[str] = ..., served_product_ids: _Optional[_Iterable[str]] = ..., served_by_sharer: _Optional[_Mapping[str, int]] = ...) -> None: ...
