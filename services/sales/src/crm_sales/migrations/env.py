import crm_sales.conversion.models  # noqa: F401  (registers conversion_records on metadata)
from crm_platform.db import platform_metadata
from crm_platform.migrations import run_env
from crm_sales.opportunity.models import metadata

run_env([metadata, platform_metadata])
