# Sourced by proxy.sh and instructions.sh: the backend fast enough never to be the limit.
# nginx_conf WORKDIR PORT prints an nginx.conf (one worker) answering every request
# with 200 {"hello":"world"} on 127.0.0.1:PORT, its files kept in WORKDIR.
nginx_conf() {
    cat <<CONF
daemon off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $1;
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / { default_type application/json; return 200 '{"hello":"world"}'; }
    }
}
CONF
}
