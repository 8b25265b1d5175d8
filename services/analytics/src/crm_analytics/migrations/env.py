from crm_analytics.dealerperf.models import metadata as dealerperf_metadata
from crm_analytics.leadcounts.models import metadata
from crm_platform.db import platform_metadata
from crm_platform.migrations import run_env

run_env([metadata, dealerperf_metadata, platform_metadata])
