"""Built-in architecture plugins, registered through entry points like any third party."""
