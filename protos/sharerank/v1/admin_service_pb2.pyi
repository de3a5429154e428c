import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "run_id", "model_type", "user_count", "product_count", "index_type", "data_fingerprint", "load_time", "pinned", "alias", "pinned_alias_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    USER_COUNT_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    LOAD_TIME_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    PINNED_ALIAS_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    run_id: str
    model_type: str
    user_count: int
    product_count: int
    index_type: str
    data_fingerprint: str
    load_time: _timestamp_pb2.Timestamp
    pinned: bool
    alias: str
    pinned_alias_version: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., run_id: _Optional[str] = ..., model_type: _Optional[str] = ..., user_count: _Optional[int] = ..., product_count: _Optional[int] = ..., index_type: _Optional[str] = ..., data_fingerprint: _Optional[str] = ..., load_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pinned: _Optional[bool] = ..., alias: _Optional[str] = ..., pinned_alias_version: _Optional[str] = ...) -> None: ...

class ReloadModelRequest(_message.Message):
    __slots__ = ("model_version",)
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    def __init__(self, model_version: _Optional[str] = ...) -> None: ...

class ReloadModelResponse(_message.Message):
    __slots__ = ("model_version", "previous_model_version", "changed", "pinned")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    previous_model_version: str
    changed: bool
    pinned: bool
    def __init__(self, model_version: _Optional[str] = ..., previous_model_version: _Optional[str] = ..., changed: _Optional[bool] = ..., pinned: _Optional[bool] = ...) -> None: ...
