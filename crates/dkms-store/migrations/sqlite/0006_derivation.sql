-- BIP-32 derivation: the key's chain code (public; with the public key it yields every
-- non-hardened child public key) and the path a signing task signs with (NULL: the key).
ALTER TABLE mpc_keys ADD COLUMN chain_code VARCHAR(64);
ALTER TABLE sign_tasks ADD COLUMN derivation_path VARCHAR(400);
