from sharerank.v1 import reason_pb2 as _reason_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RingPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RING_POLICY_UNSPECIFIED: _ClassVar[RingPolicy]
    RING_POLICY_EXCLUDE: _ClassVar[RingPolicy]
    RING_POLICY_DISCOUNT: _ClassVar[RingPolicy]
    RING_POLICY_IGNORE: _ClassVar[RingPolicy]
RING_POLICY_UNSPECIFIED: RingPolicy
RING_POLICY_EXCLUDE: RingPolicy
RING_POLICY_DISCOUNT: RingPolicy
RING_POLICY_IGNORE: RingPolicy

class GetSeedTargetsRequest(_message.Message):
    __slots__ = ("product_id", "category", "budget", "exclude_user_ids", "min_activity", "max_seeds_per_community", "epsilon", "max_fatigue", "ring_policy")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    MIN_ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    MAX_SEEDS_PER_COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    MAX_FATIGUE_FIELD_NUMBER: _ClassVar[int]
    RING_POLICY_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    category: str
    budget: int
    exclude_user_ids: _containers.RepeatedScalarFieldContainer[str]
    min_activity: int
    max_seeds_per_community: int
    epsilon: float
    max_fatigue: float
    ring_policy: RingPolicy
    def __init__(self, product_id: _Optional[str] = ..., category: _Optional[str] = ..., budget: _Optional[int] = ..., exclude_user_ids: _Optional[_Iterable[str]] = ..., min_activity: _Optional[int] = ..., max_seeds_per_community: _Optional[int] = ..., epsilon: _Optional[float] = ..., max_fatigue: _Optional[float] = ..., ring_policy: _Optional[_Union[RingPolicy, str]] = ...) -> None: ...

class SeedTarget(_message.Message):
    __slots__ = ("user_id", "marginal_reach", "cumulative_reach", "cumulative_reach_ci_low", "cumulative_reach_ci_high", "community", "reasons", "spammer_score", "spammer_score_ci_low", "spammer_score_ci_high", "shares_sent", "conversions", "audience_fatigue", "ring_score")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MARGINAL_REACH_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_REACH_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_REACH_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_REACH_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    COMMUNITY_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    SPAMMER_SCORE_FIELD_NUMBER: _ClassVar[int]
    SPAMMER_SCORE_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    SPAMMER_SCORE_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    SHARES_SENT_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FATIGUE_FIELD_NUMBER: _ClassVar[int]
    RING_SCORE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    marginal_reach: float
    cumulative_reach: float
    cumulative_reach_ci_low: float
    cumulative_reach_ci_high: float
    community: str
    reasons: _containers.RepeatedCompositeFieldContainer[_reason_pb2.Reason]
    spammer_score: float
    spammer_score_ci_low: float
    spammer_score_ci_high: float
    shares_sent: int
    conversions: int
    audience_fatigue: float
    ring_score: float
    def __init__(self, user_id: _Optional[str] = ..., marginal_reach: _Optional[float] = ..., cumulative_reach: _Optional[float] = ..., cumulative_reach_ci_low: _Optional[float] = ..., cumulative_reach_ci_high: _Optional[float] = ..., community: _Optional[str] = ..., reasons: _Optional[_Iterable[_Union[_reason_pb2.Reason, _Mapping]]] = ..., spammer_score: _Optional[float] = ..., spammer_score_ci_low: _Optional[float] = ..., spammer_score_ci_high: _Optional[float] = ..., shares_sent: _Optional[int] = ..., conversions: _Optional[int] = ..., audience_fatigue: _Optional[float] = ..., ring_score: _Optional[float] = ...) -> None: ...

class GetSeedTargetsResponse(_message.Message):
    __slots__ = ("seeds", "expected_reach", "model_version", "warnings", "expected_reach_ci_low", "expected_reach_ci_high", "influence_regime")
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REACH_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REACH_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REACH_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    INFLUENCE_REGIME_FIELD_NUMBER: _ClassVar[int]
    seeds: _containers.RepeatedCompositeFieldContainer[SeedTarget]
    expected_reach: float
    model_version: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    expected_reach_ci_low: float
    expected_reach_ci_high: float
    influence_regime: str
    def __init__(self, seeds: _Optional[_Iterable[_Union[SeedTarget, _Mapping]]] = ..., expected_reach: _Optional[float] = ..., model_version: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., expected_reach_ci_low: _Optional[float] = ..., expected_reach_ci_high: _Optional[float] = ..., influence_regime: _Optional[str] = ...) -> None: ...

class GetAudienceRequest(_message.Message):
    __slots__ = ("product_id", "k", "exclude_user_ids")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    k: int
    exclude_user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_id: _Optional[str] = ..., k: _Optional[int] = ..., exclude_user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AudienceMember(_message.Message):
    __slots__ = ("user_id", "score", "reasons")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    score: float
    reasons: _containers.RepeatedCompositeFieldContainer[_reason_pb2.Reason]
    def __init__(self, user_id: _Optional[str] = ..., score: _Optional[float] = ..., reasons: _Optional[_Iterable[_Union[_reason_pb2.Reason, _Mapping]]] = ...) -> None: ...

class GetAudienceResponse(_message.Message):
    __slots__ = ("members", "model_version", "warnings")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[AudienceMember]
    model_version: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, members: _Optional[_Iterable[_Union[AudienceMember, _Mapping]]] = ..., model_version: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...
