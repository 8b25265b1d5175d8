from crm_customers.customer.models import metadata
from crm_customers.lifecycle import models as lifecycle_models  # noqa: F401  (its tables)
from crm_platform.db import platform_metadata
from crm_platform.migrations import run_env

run_env([metadata, platform_metadata])
