"""ROS 2 bridge: run a FastVLA policy as a ROS 2 node.

``fastvla.ros2.bridge`` is the control node's core (independent of the middleware) and
``fastvla.ros2.msgs`` its message types (CDR bytes identical to ROS 2's). Transports: ``rclpy_transport`` +
``node`` + ``actions`` run it as an rclpy node on any RMW (the default where ROS 2 is installed);
``dds`` (Cyclone DDS, wire-compatible with ``rmw_cyclonedds_cpp``) runs it without a ROS install.
``fastvla ros2`` is its command line. See docs/ros2.md. Importing this package imports neither DDS, rclpy
nor torch.
"""
