"""Proof for the CNIL and the rights of the person (issue 7, RULES.md §6-§7): the hash-chained
journal, its verifier, the evidence pack, the register-wide audit export and the rights."""
