# Helpers for the device-tool scripts that run one long job in the background across calls of <= 10
# minutes (sim_base_device.sh, sim_base_train_device.sh). Source it after setting:
#   budget  seconds this call may take      t0  the call's start (date +%s)
#   W       the work folder: the job writes its pid to $W/job.pid and its output to $W/job.log

left() {  # seconds left of this call's budget
    echo $((budget - ($(date +%s) - t0)))
}

follow() {  # print the job's new log lines (progress bars left out) until it ends or $1 seconds are left
    local bars="it/s\]\|frame/s\]\|episode/s\]"
    while [ -e "$W/job.pid" ] && kill -0 "$(cat "$W/job.pid")" 2>/dev/null && [ "$(left)" -gt "$1" ]; do
        sleep 15
        grep -v "$bars" "$W/job.log" | tail -n +"$(($(cat "$W/shown" 2>/dev/null || echo 0) + 1))"
        grep -vc "$bars" "$W/job.log" > "$W/shown"
    done
    nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader
}
