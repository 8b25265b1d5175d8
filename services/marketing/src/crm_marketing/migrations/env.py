from crm_marketing.campaign.models import metadata
from crm_platform.db import platform_metadata
from crm_platform.migrations import run_env

run_env([metadata, platform_metadata])
