"""Exchange feed protocols: parsing and book synchronisation rules, free of I/O."""
