"""The sales step of the lead conversion saga (crm.cmd.sales.*): open the conversion's
opportunities, or undo them."""
