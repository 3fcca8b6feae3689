"""gatekeeper: keeps French/EU marketing campaigns lawful."""
