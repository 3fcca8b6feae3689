"""A package, so that its conftest is not imported as the top-level ``conftest`` that other test
modules import helpers from (``from conftest import TEST_SECRET``)."""
