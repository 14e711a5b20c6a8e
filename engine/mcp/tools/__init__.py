"""The MCP tool functions, one module per concept; importing one registers its tools."""
