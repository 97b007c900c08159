-- Node regions and node groups. A group is a named set of nodes with a default threshold
-- and a minimum number of distinct regions its members must span; keys made from a group
-- remember its name. mpc_keys.node_group has no foreign key on purpose: a deleted key
-- keeps the name of a group that may since have been deleted.
ALTER TABLE nodes ADD COLUMN region VARCHAR(64) NOT NULL DEFAULT '';
CREATE TABLE node_groups (
    name         VARCHAR(64) PRIMARY KEY,
    threshold    BIGINT NOT NULL,
    total_shares BIGINT NOT NULL,           -- the number of members
    min_regions  BIGINT NOT NULL DEFAULT 0, -- 0: no region requirement
    description  VARCHAR(1024) NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE node_group_members (
    group_name VARCHAR(64) NOT NULL,
    node_tag   VARCHAR(64) NOT NULL,
    position   BIGINT NOT NULL,             -- party order of keys made from the group
    PRIMARY KEY (group_name, node_tag),
    FOREIGN KEY (group_name) REFERENCES node_groups (name),
    FOREIGN KEY (node_tag) REFERENCES nodes (tag)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
ALTER TABLE mpc_keys ADD COLUMN node_group VARCHAR(64);
CREATE INDEX mpc_keys_node_group ON mpc_keys (node_group);
