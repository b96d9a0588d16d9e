"""ROS 2 bridge: run a FastVLA policy as a ROS 2 node over DDS, without a ROS install.

``fastvla.ros2.msgs`` holds the ROS 2 message types (CDR bytes identical to ROS 2's),
``fastvla.ros2.dds`` the Cyclone DDS transport (wire-compatible with ``rmw_cyclonedds_cpp``),
``fastvla.ros2.bridge`` the control node, ``fastvla ros2`` its command line. See docs/ros2.md.
Importing this package imports neither DDS nor torch.
"""
