from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReasonKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_KIND_UNSPECIFIED: _ClassVar[ReasonKind]
    REASON_KIND_PERSONALIZED: _ClassVar[ReasonKind]
    REASON_KIND_POPULAR: _ClassVar[ReasonKind]
    REASON_KIND_FRIENDS_BOUGHT: _ClassVar[ReasonKind]
    REASON_KIND_SHARED_TO_YOU: _ClassVar[ReasonKind]
    REASON_KIND_CATEGORY_PRIOR: _ClassVar[ReasonKind]
    REASON_KIND_SIMILAR: _ClassVar[ReasonKind]
    REASON_KIND_CONVERSION_HISTORY: _ClassVar[ReasonKind]
    REASON_KIND_NETWORK_POSITION: _ClassVar[ReasonKind]
    REASON_KIND_SHARE_PROPENSITY: _ClassVar[ReasonKind]
    REASON_KIND_SHARER_CAPPED: _ClassVar[ReasonKind]
REASON_KIND_UNSPECIFIED: ReasonKind
REASON_KIND_PERSONALIZED: ReasonKind
REASON_KIND_POPULAR: ReasonKind
REASON_KIND_FRIENDS_BOUGHT: ReasonKind
REASON_KIND_SHARED_TO_YOU: ReasonKind
REASON_KIND_CATEGORY_PRIOR: ReasonKind
REASON_KIND_SIMILAR: ReasonKind
REASON_KIND_CONVERSION_HISTORY: ReasonKind
REASON_KIND_NETWORK_POSITION: ReasonKind
REASON_KIND_SHARE_PROPENSITY: ReasonKind
REASON_KIND_SHARER_CAPPED: ReasonKind

class Reason(_message.Message):
    __slots__ = ("kind", "text")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    kind: ReasonKind
    text: str
    def __init__(self, kind: _Optional[_Union[ReasonKind, str]] = ..., text: _Optional[str] = ...) -> None: ...
