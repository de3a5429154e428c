"""AdminService (GetModelInfo, ReloadModel): what is serving, and reloads that swap atomically."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from sharerank.serving.api.spec import ServiceSpec, service_name, serving_model
from sharerank.serving.model_holder import ModelHolder, ModelLoadError
from sharerank.v1 import admin_service_pb2, admin_service_pb2_grpc


class AdminService(admin_service_pb2_grpc.AdminServiceServicer):
    """Model information and reloads."""

    def __init__(self, holder: ModelHolder):
        self.holder = holder

    def GetModelInfo(self, request, context):
        model = serving_model(self.holder, context)
        bundle = model.bundle
        load_time = Timestamp()
        load_time.FromDatetime(model.load_time)
        return admin_service_pb2.GetModelInfoResponse(
            model_name=model.name, model_version=model.version, run_id=model.run_id,
            model_type=bundle.model_type, user_count=len(bundle.users), product_count=len(bundle.products),
            index_type=bundle.index.kind, data_fingerprint=str(bundle.info.get("data_fingerprint", "")),
            load_time=load_time)

    def ReloadModel(self, request, context):
        try:
            now, before = self.holder.load(request.model_version or None)
        except ModelLoadError as exc:
            current = self.holder.current
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{exc}; still serving version {current.version if current else 'none'}")
        return admin_service_pb2.ReloadModelResponse(
            model_version=now.version, previous_model_version=before.version if before else "",
            changed=before is None or before.version != now.version)


SERVICE = ServiceSpec(name=service_name(admin_service_pb2, "AdminService"), roles=frozenset(),
                      build=lambda ctx: AdminService(ctx.holder),
                      register=admin_service_pb2_grpc.add_AdminServiceServicer_to_server)
