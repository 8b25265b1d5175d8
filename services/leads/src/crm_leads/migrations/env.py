import crm_leads.acceptance.models  # registers lead_acceptances and lead_rejections
import crm_leads.activities.models  # registers lead_activities on metadata
import crm_leads.assignment.models  # registers the assignment policies and cursors on metadata
import crm_leads.conversion.models  # registers lead_conversions on metadata
import crm_leads.dedup.models  # registers dedup_rules and lead_history on metadata
import crm_leads.distribution.models  # registers the distribution tables on metadata
import crm_leads.imports.models  # registers the import job tables on metadata
import crm_leads.orgtree.models  # registers the org_units replica on metadata
import crm_leads.poolrules.models  # registers lead_releases on metadata
import crm_leads.scoring.models  # registers scoring_rules on metadata
import crm_leads.sla.models  # registers sla_policies, lead_sla and lead_timers
import crm_leads.tenantsettings.models  # registers lead_settings on metadata
import crm_leads.users.models  # registers the users replica on metadata
import crm_leads.webhook.models  # noqa: F401  (registers the webhook tables on metadata)
from crm_leads.lead.models import metadata
from crm_platform.db import platform_metadata
from crm_platform.migrations import run_env

run_env([metadata, platform_metadata])
