"""AdminService (GetModelInfo, ReloadModel): what is serving (and whether it is pinned), and reloads that swap
atomically, run in a bulkhead of their own; a reload to a named version pins it (``ModelHolder.load``)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from sharerank.serving.api.spec import ServiceSpec, check_deadline, service_name, serving_model
from sharerank.serving.bulkhead import Bulkhead
from sharerank.serving.errors import ServiceError, abort, failed_precondition
from sharerank.serving.ids import check_id
from sharerank.serving.model_holder import LoadedModel, ModelHolder, ModelLoadError
from sharerank.v1 import admin_service_pb2, admin_service_pb2_grpc


class AdminService(admin_service_pb2_grpc.AdminServiceServicer):
    """Model information and reloads."""

    def __init__(self, holder: ModelHolder, bulkhead: Bulkhead):
        self.holder, self.bulkhead = holder, bulkhead

    def GetModelInfo(self, request, context):
        model = serving_model(self.holder, context)
        pin = self.holder.pin
        bundle = model.bundle
        load_time = Timestamp()
        load_time.FromDatetime(model.load_time)
        return admin_service_pb2.GetModelInfoResponse(
            model_name=model.name, model_version=model.version, run_id=model.run_id,
            model_type=bundle.model_type, user_count=len(bundle.users), product_count=len(bundle.products),
            index_type=bundle.index.kind, data_fingerprint=str(bundle.info.get("data_fingerprint", "")),
            load_time=load_time, pinned=pin is not None, alias=self.holder.settings.alias,
            pinned_alias_version=(pin.alias_version or "") if pin is not None else "")

    def ReloadModel(self, request, context):
        try:
            version = check_id(request.model_version, "model_version") if request.model_version else None
        except ServiceError as error:
            abort(context, error)
        check_deadline(context)
        try:
            now, before = self.bulkhead.run(context, lambda: self._load(version))
        except ServiceError as error:
            abort(context, error)
        return admin_service_pb2.ReloadModelResponse(
            model_version=now.version, previous_model_version=before.version if before else "",
            changed=before is None or before.version != now.version, pinned=self.holder.pin is not None)

    def _load(self, version: str | None) -> tuple[LoadedModel, LoadedModel | None]:
        try:
            return self.holder.load(version)
        except ModelLoadError as exc:
            current = self.holder.current
            raise failed_precondition(
                f"{exc}; still serving version {current.version if current else 'none'}", "MODEL_LOAD_FAILED",
                model_version=version or "", serving_version=current.version if current else "") from exc


SERVICE = ServiceSpec(name=service_name(admin_service_pb2, "AdminService"), roles=frozenset(),
                      build=lambda ctx: AdminService(ctx.holder, ctx.reloads),
                      register=admin_service_pb2_grpc.add_AdminServiceServicer_to_server)
