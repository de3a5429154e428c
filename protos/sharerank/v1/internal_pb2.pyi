from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class FeedPageToken(_message.Message):
    __slots__ = ("offset", "request_hash", "model_version")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_HASH_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    offset: int
    request_hash: int
    model_version: str
    def __init__(self, offset: _Optional[int] = ..., request_hash: _Optional[int] = ..., model_version: _Optional[str] = ...) -> None: ...
