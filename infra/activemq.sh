#!/usr/bin/env bash
# ActiveMQ for tests and demos, on loopback only:
#   STOMP      127.0.0.1:61613
#   STOMP+TLS  127.0.0.1:61614 (self-signed certificate made with keytool; its PEM is
#              .run/activemq/broker-ca.pem, which tests trust as an extra CA)
#   auth       user "herald", password in .run/activemq/password (made here, per machine)
# Debian's package provides the broker; Debian's default config has no STOMP
# connector, so this ships its own activemq.xml and starts the JVM itself.
#   infra/activemq.sh start | stop | restart | status
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
run="$here/.run/activemq"
home=/usr/share/activemq
pidfile="$run/broker.pid"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

install() {
  if [ -f "$home/bin/activemq.jar" ] && command -v keytool >/dev/null; then
    return
  fi
  echo "activemq: installing Debian's activemq package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq activemq default-jre-headless >/dev/null
}

configure() {
  mkdir -p "$run/conf" "$run/data" "$run/tmp"
  if [ ! -f "$run/password" ]; then
    head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$run/password"
  fi
  if [ ! -f "$run/broker.p12" ]; then
    keytool -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 \
      -dname "CN=localhost, O=Herald test broker" -ext "SAN=dns:localhost,ip:127.0.0.1" \
      -keystore "$run/broker.p12" -storetype PKCS12 \
      -storepass herald-test-keystore -keypass herald-test-keystore >/dev/null 2>&1
    keytool -exportcert -rfc -alias broker -keystore "$run/broker.p12" -storetype PKCS12 \
      -storepass herald-test-keystore -file "$run/broker-ca.pem" >/dev/null 2>&1
  fi
  local password
  password=$(cat "$run/password")
  cat >"$run/conf/activemq.xml" <<XML
<beans xmlns="http://www.springframework.org/schema/beans"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
       xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd
                           http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="herald-test" useJmx="false"
          dataDirectory="$run/data" persistent="true">
    <persistenceAdapter>
      <kahaDB directory="$run/data/kahadb"/>
    </persistenceAdapter>
    <plugins>
      <simpleAuthenticationPlugin anonymousAccessAllowed="false">
        <users>
          <authenticationUser username="herald" password="$password" groups="users"/>
        </users>
      </simpleAuthenticationPlugin>
      <!-- "herald" may use herald.* queues only, so a SEND elsewhere gets an ERROR frame. -->
      <authorizationPlugin>
        <map>
          <authorizationMap>
            <authorizationEntries>
              <authorizationEntry queue="herald.>" read="users" write="users" admin="users"/>
              <authorizationEntry topic="ActiveMQ.Advisory.>" read="users" write="users" admin="users"/>
            </authorizationEntries>
          </authorizationMap>
        </map>
      </authorizationPlugin>
    </plugins>
    <sslContext>
      <sslContext keyStore="file:$run/broker.p12" keyStoreType="PKCS12" keyStorePassword="herald-test-keystore"/>
    </sslContext>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:61613?transport.closeAsync=false"/>
      <transportConnector name="stomp+ssl" uri="stomp+ssl://127.0.0.1:61614?transport.closeAsync=false"/>
    </transportConnectors>
  </broker>
</beans>
XML
}

start() {
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    return
  fi
  if answers 61613; then
    echo "activemq: 127.0.0.1:61613 is already taken by something else" >&2
    exit 1
  fi
  install
  configure
  java -Xms64m -Xmx256m -Djava.io.tmpdir="$run/tmp" \
    --add-opens java.base/java.lang=ALL-UNNAMED \
    -Dactivemq.classpath="$home/lib/" -Dactivemq.home="$home" -Dactivemq.base="$run" \
    -Dactivemq.conf="$run/conf" -Dactivemq.data="$run/data" \
    -jar "$home/bin/activemq.jar" start "xbean:file:$run/conf/activemq.xml" \
    >"$run/broker.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 300); do
    if answers 61613 && answers 61614; then
      return
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "activemq: the broker exited; see $run/broker.log" >&2
      tail -20 "$run/broker.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "activemq: no STOMP listener after 60 s; see $run/broker.log" >&2
  exit 1
}

stop() {
  if [ -f "$pidfile" ]; then
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && echo running || echo stopped ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
