//! Event-Driven Ansible webhook client and the EDA provider.
