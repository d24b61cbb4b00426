//! Ansible Automation Platform controller client and the AAP provider.
