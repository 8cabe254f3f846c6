"""The four services of the loop: intake, routing, sla, reporting."""
