from crm_platform.db import platform_metadata
from crm_platform.migrations import run_env
from crm_service_desk.ticket.models import metadata

run_env([metadata, platform_metadata])
