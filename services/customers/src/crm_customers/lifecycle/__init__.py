"""Customer lifecycle stages (prospect -> customer -> repeat -> at-risk -> lost), derived
from the orders and activity other services report in events."""
