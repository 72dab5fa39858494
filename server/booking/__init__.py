"""Bookings and leases: pure rules (``rules``), the database-backed service (``service``), live
notifications (``events``), the lab's device registry (``lab``) and the lease sweeper."""
