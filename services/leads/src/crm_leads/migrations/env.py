import crm_leads.dedup.models  # registers dedup_rules and lead_history on metadata
import crm_leads.distribution.models  # registers the distribution tables on metadata
import crm_leads.imports.models  # registers the import job tables on metadata
import crm_leads.orgtree.models  # registers the org_units replica on metadata
import crm_leads.scoring.models  # registers scoring_rules on metadata
import crm_leads.tenantsettings.models  # registers lead_settings on metadata
import crm_leads.webhook.models  # noqa: F401  (registers the webhook tables on metadata)
from crm_leads.lead.models import metadata
from crm_platform.db import platform_metadata
from crm_platform.migrations import run_env

run_env([metadata, platform_metadata])
