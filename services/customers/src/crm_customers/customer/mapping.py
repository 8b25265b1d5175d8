from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2

from crm.customers.v1 import customer_pb2
from crm_customers.customer import contact_rules
from crm_customers.customer.schema import Schema
from crm_platform.protos import etag, timestamp


def _consents(stored: dict[str, dict[str, Any]]) -> list[customer_pb2.Consent]:
    return [
        customer_pb2.Consent(
            purpose=customer_pb2.ConsentPurpose.ValueType(contact_rules.PURPOSES[name]),
            granted=c["granted"],
            consent_time=timestamp(datetime.fromisoformat(c["time"])),
            source=c["source"],
        )
        for name, c in sorted(stored.items(), key=lambda kv: contact_rules.PURPOSES[kv[0]])
    ]


def contact_to_proto(row: Any) -> customer_pb2.Contact:
    return customer_pb2.Contact(
        id=str(row.id),
        customer_id=str(row.customer_id),
        full_name=row.full_name,
        title=row.title,
        phone=row.phone,
        email=row.email,
        create_time=timestamp(row.create_time),
        reports_to_id=str(row.reports_to_id) if row.reports_to_id else "",
        buying_roles=row.buying_roles,
        allowed_channels=row.allowed_channels,
        preferred_channel=row.preferred_channel,
        consents=_consents(row.consents),
        update_time=timestamp(row.update_time),
        etag=etag(row.id, row.version),
    )


def lifecycle_stage(stage: str | None) -> customer_pb2.LifecycleStage.ValueType:
    """The enum of a stored stage name ("PROSPECT" ...); none stored: UNSPECIFIED."""
    if not stage:
        return customer_pb2.LIFECYCLE_STAGE_UNSPECIFIED
    return customer_pb2.LifecycleStage.Value(f"LIFECYCLE_STAGE_{stage}")


def customer_to_proto(row: Any, contacts: Iterable[Any] = ()) -> customer_pb2.Customer:
    custom = struct_pb2.Struct()
    custom.update(row.custom_fields)
    stage_time = getattr(row, "lifecycle_stage_time", None)
    return customer_pb2.Customer(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        owner_org_id=str(row.owner_org_id),
        owner_org_path=row.owner_org_path,
        kind=row.kind,
        display_name=row.display_name,
        tax_id=row.tax_id,
        phone=row.phone,
        email=row.email,
        province=row.province,
        city=row.city,
        contacts=[contact_to_proto(c) for c in contacts],
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=etag(row.id, row.version),
        legal_name=row.legal_name,
        industry=row.industry,
        organization_size=row.organization_size,
        gender=row.gender,
        birthday=row.birthday.isoformat() if row.birthday else "",
        parent_id=str(row.parent_id) if row.parent_id else "",
        account_path=row.account_path,
        custom_fields=custom,
        lifecycle_stage=lifecycle_stage(getattr(row, "lifecycle_stage", None)),
        lifecycle_stage_time=timestamp(stage_time) if stage_time else None,
    )


def lifecycle_change_to_proto(row: Any) -> customer_pb2.LifecycleChange:
    return customer_pb2.LifecycleChange(
        id=str(row.id),
        customer_id=str(row.customer_id),
        from_stage=lifecycle_stage(row.from_stage),
        to_stage=lifecycle_stage(row.to_stage),
        reason=row.reason,
        change_time=timestamp(row.change_time),
    )


def _value(value: Any) -> struct_pb2.Value:
    holder = struct_pb2.Struct()
    holder.update({"value": value})
    return holder.fields["value"]


def field_change_to_proto(row: Any) -> customer_pb2.FieldChange:
    return customer_pb2.FieldChange(
        id=str(row.id),
        customer_id=str(row.customer_id),
        contact_id=str(row.contact_id) if row.contact_id else "",
        field=row.field,
        old_value=_value(row.old_value),
        new_value=_value(row.new_value),
        actor=row.actor,
        change_time=timestamp(row.change_time),
    )


def schema_to_proto(schema: Schema) -> customer_pb2.CustomerFieldSchema:
    return customer_pb2.CustomerFieldSchema(
        fields=[
            customer_pb2.CustomFieldDefinition(
                name=d.name,
                type=customer_pb2.CustomFieldType.Value(f"CUSTOM_FIELD_TYPE_{d.type}"),
                options=d.options,
                required=d.required,
            )
            for d in schema.definitions
        ],
        etag=schema.etag,
        update_time=timestamp(schema.update_time) if schema.update_time else None,
    )


def _tag_kind(kind: str) -> customer_pb2.TagKind.ValueType:
    return customer_pb2.TagKind.Value(f"TAG_KIND_{kind.upper()}")


def tag_to_proto(row: Any) -> customer_pb2.Tag:
    return customer_pb2.Tag(
        name=row.name,
        kind=_tag_kind(row.kind),
        created_by=row.created_by,
        create_time=timestamp(row.create_time),
    )


def customer_tag_to_proto(row: Any) -> customer_pb2.CustomerTag:
    return customer_pb2.CustomerTag(
        name=row.name,
        kind=_tag_kind(row.kind),
        source=_tag_kind(row.source),
        tagged_by=row.tagged_by,
        tag_time=timestamp(row.tag_time),
    )


def segment_to_proto(row: Any, member_count: int) -> customer_pb2.Segment:
    rule = struct_pb2.Struct()
    rule.update(row.rule)
    return customer_pb2.Segment(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        display_name=row.display_name,
        rule=rule,
        member_count=member_count,
        created_by=row.created_by,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=etag(row.id, row.version),
    )


def segment_version_to_proto(row: Any) -> customer_pb2.SegmentVersion:
    rule = struct_pb2.Struct()
    rule.update(row.rule)
    return customer_pb2.SegmentVersion(
        segment_id=str(row.segment_id),
        version=row.version,
        display_name=row.display_name,
        rule=rule,
        created_by=row.created_by,
        create_time=timestamp(row.create_time),
    )
