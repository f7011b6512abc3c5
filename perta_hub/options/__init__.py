"""Every command's options as typed, validated data; the CLI binds its flags from these (one definition each)."""
