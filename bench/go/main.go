// Command wspeer is the gorilla/websocket peer for the threadcast benchmark.
//
// Endpoints (the same as threadcast's WebSocket port):
//
//	/echo        echoes every text or binary message unchanged
//	/ws/<room>   room broadcast: every message a member sends goes to every
//	             member, sender included, payload and type exactly as sent.
//	             A "?raw=1" query is accepted and ignored.
//
// The room code follows gorilla's own chat example (examples/chat): one hub
// goroutine per room, a readPump and a writePump goroutine per client, a
// buffered send channel, and a client whose channel is full is dropped. Two
// changes for the benchmark: messages are not joined with newlines (raw
// semantics: one frame out per frame in), and the dropped client is sent
// close code 1008 so the load generator can tell a slow consumer.
//
// It prints "listening ws=HOST:PORT" on stderr once it accepts connections.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// Time allowed to write a message to the peer.
	writeWait = 10 * time.Second
	// Time allowed to read the next pong message from the peer.
	pongWait = 60 * time.Second
	// Send pings to peer with this period. Must be less than pongWait.
	pingPeriod = (pongWait * 9) / 10
	// Maximum message size allowed from peer (the benchmark sends 64 KiB).
	maxMessageSize = 1 << 20
	// Messages queued per client before it counts as a slow consumer
	// (the chat example's value).
	sendQueueLen = 256
	// Close code for a slow consumer (policy violation).
	closeSlowConsumer = websocket.ClosePolicyViolation
)

var upgrader = websocket.Upgrader{
	ReadBufferSize:  4096,
	WriteBufferSize: 4096,
}

type message struct {
	kind int
	data []byte
}

// Hub maintains the set of clients of one room and broadcasts to them.
type Hub struct {
	clients    map[*Client]bool
	broadcast  chan message
	register   chan *Client
	unregister chan *Client
}

func newHub() *Hub {
	return &Hub{
		broadcast:  make(chan message),
		register:   make(chan *Client),
		unregister: make(chan *Client),
		clients:    make(map[*Client]bool),
	}
}

func (h *Hub) run() {
	for {
		select {
		case client := <-h.register:
			h.clients[client] = true
		case client := <-h.unregister:
			if _, ok := h.clients[client]; ok {
				delete(h.clients, client)
				close(client.send)
			}
		case m := <-h.broadcast:
			for client := range h.clients {
				select {
				case client.send <- m:
				default:
					client.slow = true
					close(client.send)
					delete(h.clients, client)
				}
			}
		}
	}
}

// Client is a middleman between the websocket connection and the hub.
type Client struct {
	hub  *Hub
	conn *websocket.Conn
	send chan message
	// Set by the hub before it closes send because the queue was full.
	slow bool
}

// readPump pumps messages from the websocket connection to the hub.
func (c *Client) readPump() {
	defer func() {
		c.hub.unregister <- c
		c.conn.Close()
	}()
	c.conn.SetReadLimit(maxMessageSize)
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error { c.conn.SetReadDeadline(time.Now().Add(pongWait)); return nil })
	for {
		kind, data, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		// Any traffic from the peer shows it is alive.
		c.conn.SetReadDeadline(time.Now().Add(pongWait))
		c.hub.broadcast <- message{kind, data}
	}
}

// writePump pumps messages from the hub to the websocket connection.
func (c *Client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case m, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				// The hub closed the channel.
				payload := []byte{}
				if c.slow {
					payload = websocket.FormatCloseMessage(closeSlowConsumer, "slow consumer")
				}
				c.conn.WriteMessage(websocket.CloseMessage, payload)
				return
			}
			if err := c.conn.WriteMessage(m.kind, m.data); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

var (
	roomsMu sync.Mutex
	rooms   = map[string]*Hub{}
)

func hubFor(name string) *Hub {
	roomsMu.Lock()
	defer roomsMu.Unlock()
	h, ok := rooms[name]
	if !ok {
		h = newHub()
		rooms[name] = h
		go h.run()
	}
	return h
}

func serveRoom(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/ws/")
	if name == "" || strings.Contains(name, "/") {
		http.NotFound(w, r)
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	hub := hubFor(name)
	client := &Client{hub: hub, conn: conn, send: make(chan message, sendQueueLen)}
	client.hub.register <- client
	go client.writePump()
	go client.readPump()
}

func serveEcho(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	conn.SetReadLimit(maxMessageSize)
	for {
		kind, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if err := conn.WriteMessage(kind, data); err != nil {
			return
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	log.SetOutput(os.Stderr)

	mux := http.NewServeMux()
	mux.HandleFunc("/echo", serveEcho)
	mux.HandleFunc("/ws/", serveRoom)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "listening ws=%s\n", ln.Addr())
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(server.Serve(ln))
}
