"""The agent's configuration file (`enforcer --config FILE`): its JSON Schema and loader."""
