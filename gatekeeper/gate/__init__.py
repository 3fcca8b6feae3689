"""The gate's shell: campaigns and recipient lists in, verdicts out (the rules are in
gatekeeper.domain)."""
